"""The kernel's pure pieces and the shape of the tree."""
