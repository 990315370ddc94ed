"""``melo run``: MELO on SmolLM2-135M-Instruct with built-in real-world facts (``facts.json``),
or (``--world``) on a model of a small fictional world (``world.json``)."""

from .world import EditCase, Fact, World, load_world, read_edits_file

__all__ = ["EditCase", "Fact", "World", "load_world", "read_edits_file"]
