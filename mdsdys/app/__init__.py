"""The Streamlit adapter: the only package that imports streamlit. Pages call it and the domain packages."""
