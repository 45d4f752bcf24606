"""Bottom layer: the value types, the model's static structure, compile options, linear algebra."""
