"""Width-search methods, each a thin layer over the channel space, training and search code."""
