"""memagent.meta."""
