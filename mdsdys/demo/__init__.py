"""The built-in demo study: the seeded synthetic smear generator, demo slides and demo accounts."""
