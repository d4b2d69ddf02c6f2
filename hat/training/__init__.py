"""Training support: pre-flight, BasicSR patches and compatibility, resume, the experiment lock, rank failures."""
