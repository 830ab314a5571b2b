"""Controllers: evaluate an object with the domain logic and write its status, one write path."""
