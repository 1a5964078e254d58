"""Bringing images in: smear fields, labelled single cells and fields with masks, from folders or zips."""
