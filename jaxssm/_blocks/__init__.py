"""Building blocks over the step algebra: associative elements, EM statistics, Gaussian draws."""
