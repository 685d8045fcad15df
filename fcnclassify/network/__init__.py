"""What a network is and how it becomes fully convolutional; here so far: seeded random weights
and small VGG-style networks for exactness checks (:mod:`.seeded`)."""
