"""From a raw Zoom recording folder to the corpus input contract (README "From a Zoom recording")."""
