"""memagent.bench."""
