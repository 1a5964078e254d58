"""Annotate page: draw nucleus masks on smear fields; they train the segmenter."""

import numpy as np
import streamlit as st
from streamlit_drawable_canvas import st_canvas

from mdsdys.annotate import canvas, masks, scale, walk
from mdsdys.app import ui
from mdsdys.errors import MdsdysError

ui.page_setup("Annotate")
st.title("Annotate nucleus masks")
user = ui.require_login("annotate")

with ui.store() as db:
    queue = masks.fields_to_annotate(db)
if not queue:
    st.info("No smear fields to annotate yet. Import fields on the Import page (or run `mdsdys demo`).")
    st.stop()

masked = sum(1 for field in queue if field["masks"])
st.caption(f"{masked} of {len(queue)} fields have a mask. A first segmenter needs at least "
           f"{masks.MIN_MASKS} masked fields; more, from several slides, make it better. "
           "Fields without a mask come first; once a segmenter exists, those it is least sure about lead.")

fields = {field["id"]: field for field in queue}
slide_of = {field_id: field["slide"] for field_id, field in fields.items()}
# A fixed walk for the session: saving moves a field to the back of the queue, and Next then Previous
# must still come back to it (mdsdys.annotate.walk).
order = st.session_state["annotate_order"] = walk.walk_order(st.session_state.get("annotate_order", []), list(fields))
slides = list(dict.fromkeys(slide_of[field_id] for field_id in order))
if st.session_state.get("annotate_slide") not in slides:
    st.session_state["annotate_slide"] = slides[0]


def _move(in_slide: tuple[int, ...], step: int) -> None:
    st.session_state["annotate_field"] = walk.step(in_slide, st.session_state.get("annotate_field"), step)
    st.session_state["annotate_generation"] = st.session_state.get("annotate_generation", 0) + 1


with st.sidebar:
    slide_name = st.selectbox("Slide", slides, key="annotate_slide")
    in_slide = tuple(walk.slide_fields(order, slide_of, slide_name))
    if st.session_state.get("annotate_field") not in in_slide:
        st.session_state["annotate_field"] = in_slide[0]
    field_id = st.selectbox("Field", in_slide, key="annotate_field", help=f"{len(in_slide)} fields on this slide",
                            format_func=lambda i: fields[i]["name"] + (" · has a mask" if fields[i]["masks"] else ""))
field = fields[field_id]
if st.session_state.get("annotate_shown") != field_id:  # a new field starts with the brush, not the last tool
    st.session_state["annotate_shown"] = field_id
    st.session_state["annotate_tool"] = "Brush"
    st.session_state["annotate_view"] = 0

with ui.store() as db:
    image = masks.field_image(db, field["id"])
    saved_mask, saved_source = masks.current_mask(db, user, field["id"])
    slide_id = masks.field_slide(db, field["id"])
    slide_scale = scale.slide_scale_of(db, slide_id)
base = st.session_state.get(f"annotate_base_{field['id']}", saved_mask)
source = st.session_state.get(f"annotate_source_{field['id']}", saved_source or "drawn")

views = canvas.plan_views(field["width"], field["height"])
with st.sidebar:
    st.write(f"**{field['name']}** · slide {field['slide']} · {field['width']}x{field['height']} px")
    view_index = st.selectbox("View", range(len(views)), key="annotate_view",
                              format_func=lambda i: f"part {i + 1} of {len(views)}") if len(views) > 1 else 0
    tool = st.radio("Tool", ["Brush", "Polygon", "Eraser"], key="annotate_tool", horizontal=True)
    if tool == "Polygon":
        st.caption("Click round the nucleus to place corners; click the first corner again to close the "
                   "polygon (a closed one is filled). Clicking another corner removes it.")
    width = st.slider("Brush width (canvas pixels)", 2, 60, 14, key="annotate_brush")
    if field["uncertainty"] is not None:
        st.caption(f"Segmenter uncertainty on this field: {field['uncertainty']:.2f} (0 sure, 1 unsure).")
    with st.expander("Slide scale", expanded=slide_scale.estimated):
        st.write(f"Nucleus diameter on slide {field['slide']}: {slide_scale.describe()}")
        if saved := st.session_state.pop("annotate_scale_saved", None):
            st.success(saved)

        def save_scale(setter, value: float, saved: str) -> None:
            try:
                job = setter(ui.settings(), user, slide_id, value)
                st.session_state["annotate_scale_saved"] = saved + (
                    " Unread cells on this slide are being re-detected." if job else "")
                st.rerun()
            except MdsdysError as exc:
                ui.show_error(exc)

        with st.form("annotate_scale"):  # keys per slide: a value never carries over to the next slide
            diameter = st.number_input("Nucleus diameter (px)", *scale.DIAMETER_RANGE,
                                       value=float(slide_scale.diameter_px or 24.0), step=0.5,
                                       key=f"annotate_diameter_{slide_id}")
            if st.form_submit_button("Set the slide's scale"):
                save_scale(scale.set_slide_diameter, diameter, f"Saved {diameter:g} px.")
        with st.form("annotate_um"):  # sizes in µm need it; scans bring their own (issue 18)
            um = st.number_input("µm per pixel (the camera's pixel size / the objective)", *scale.UM_PER_PX_RANGE,
                                 value=float(slide_scale.um_per_px or 0.1), step=0.005, format="%.3f",
                                 key=f"annotate_um_{slide_id}")
            if st.form_submit_button("Set µm per pixel"):
                save_scale(scale.set_slide_um_per_px, um, f"Saved {um:g} µm per pixel.")
view = views[view_index]
canvas_w, canvas_h = canvas.canvas_size(view)
color = canvas.css_rgba(canvas.ERASE_RGBA if tool == "Eraser" else canvas.NUCLEUS_RGBA)
canvas_key = f"annotate_canvas_{field['id']}_{view_index}_{st.session_state.get('annotate_generation', 0)}"
result = st_canvas(
    fill_color=color, stroke_width=width, stroke_color=color,
    background_image=canvas.view_background(image, base, view, (canvas_w, canvas_h)),
    height=canvas_h, width=canvas_w, drawing_mode="polygon" if tool == "Polygon" else "freedraw",
    return_image_data=True, key=canvas_key,
)
st.caption("Draw over each nucleus. Hover over the canvas for its toolbar, at the top right: undo, redo "
           "and the bin, which clears what you drew since the last save. Tinted areas are already in the mask; "
           "the eraser (a pale stroke) removes them.")


def _merged() -> np.ndarray:
    strokes = result.image_data
    if strokes is None:
        return base
    add, erase = canvas.strokes_to_masks(np.asarray(strokes), view)
    return canvas.merge_view(base, view, add, erase)


buttons = st.columns(5)
if buttons[0].button("Save", type="primary", key="annotate_save", shortcut="Ctrl+S"):
    try:
        with ui.store() as db:
            nuclei = masks.save_annotation(db, user, field["id"], _merged(), source)
        st.session_state[f"annotate_base_{field['id']}"] = _merged()
        st.session_state["annotate_generation"] = st.session_state.get("annotate_generation", 0) + 1
        st.success(f"Saved: {nuclei} nuclei ({source.replace('_', '-')}).")
    except MdsdysError as exc:
        ui.show_error(exc)
buttons[1].button("← Previous", key="annotate_prev", on_click=_move, args=(in_slide, -1))
buttons[2].button("Next →", key="annotate_next", on_click=_move, args=(in_slide, 1))
if buttons[3].button("Clear the whole mask", key="annotate_clear"):
    st.session_state[f"annotate_base_{field['id']}"] = np.zeros_like(saved_mask)
    st.session_state["annotate_generation"] = st.session_state.get("annotate_generation", 0) + 1
    st.rerun()
if buttons[4].button("Start from the model's mask", key="annotate_seed"):
    from mdsdys.segment import (
        detect,  # the segmenter (and torch) load only when asked for
    )

    try:
        with ui.store() as db:
            seeded = detect.model_mask(db, field["id"])
        st.session_state[f"annotate_base_{field['id']}"] = seeded
        st.session_state[f"annotate_source_{field['id']}"] = "model_seeded"
        st.session_state["annotate_generation"] = st.session_state.get("annotate_generation", 0) + 1
        st.rerun()
    except MdsdysError as exc:
        ui.show_error(exc)
