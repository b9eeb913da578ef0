"""Running the functions off Lambda: `pgkeeper invoke` and `pgkeeper serve`."""
