"""`python -m r1zero.bench` = `r1zero-bench`."""

from r1zero.bench import main

main()
