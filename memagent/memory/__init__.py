"""memagent.memory."""
