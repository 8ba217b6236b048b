"""Code generation: board + kernel -> Kbuild-able module trees (Jinja templates)."""
