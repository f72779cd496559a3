"""prefloop's ML side: generator, presets, preference model; no database, no Discord."""
