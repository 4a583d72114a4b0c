"""What every layer of the package uses: input checks (validation), memory checks (memory) and
thread counts (threads)."""
