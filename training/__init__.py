"""latentsynth's datasets, training loops, SOM timbre grid and evaluation metrics."""
