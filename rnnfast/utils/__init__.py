"""What every layer of the package uses: input checks (validation) and thread counts (threads)."""
