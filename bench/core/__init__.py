"""Plain data shared by every layer, importing no torch: the run config and the options every
method has, errors, the typed registry, the data spec, reference rows and method cards,
run-folder file names, atomic file writes and torch files read as numpy."""
