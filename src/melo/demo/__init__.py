"""``melo run``: MELO on a model of a small fictional world (facts in ``world.json``)."""

from .world import EditCase, Fact, World, load_world, read_edits_file

__all__ = ["EditCase", "Fact", "World", "load_world", "read_edits_file"]
