"""Data shipped with shoestring (the small default chat corpus)."""
