"""Developer tools kept with the tests (trace recorders); never imported by the tests."""
