"""memagent.algos."""
