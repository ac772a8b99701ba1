"""Command-line layers over the library: argument parsing and printing only."""
