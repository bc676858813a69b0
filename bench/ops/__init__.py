"""Small typed tensor operations shared by methods and models: which positions the encoder
sees (`Visible`, random subsets, blocks), patchify and position tables."""
