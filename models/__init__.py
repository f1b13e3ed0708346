"""Networks (MONAI 3-D classifiers, a torchvision backbone for 2-D images) and the model registry."""
