"""Sources of ticks and reference data: CSV files (ASX and generic layouts), reference files, the generator."""
