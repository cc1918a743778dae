"""`python -m r1zero_bench` = `r1zero-bench`."""

from r1zero_bench import main

main()
