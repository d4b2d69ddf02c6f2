"""Training support: the pre-flight option check, the basicsr 1.4.2 compatibility layer and the experiment lock."""
