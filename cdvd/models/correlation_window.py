"""The displacement window of PWC-Net's cost volume, shared by the PyTorch and cupy implementations."""

MAX_DISPLACEMENT = 4  # displacements -4 .. 4 pixels in each direction
NUM_DISPLACEMENTS = (2 * MAX_DISPLACEMENT + 1) ** 2  # 81 output channels
