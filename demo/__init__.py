"""`make demo`: pgkeeper's jobs against a throwaway database modelled on the seed apps."""
