"""memagent.continual."""
