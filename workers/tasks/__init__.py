"""Discovery tasks: prompt pairs with answers, built by name from a spec string."""
