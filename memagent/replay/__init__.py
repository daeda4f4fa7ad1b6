"""memagent.replay."""
