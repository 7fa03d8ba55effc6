"""devicegate's Pulumi program (``__main__.py``) and its components."""
