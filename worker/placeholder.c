typedef int bt_placeholder_unused; /* removed once the module has sources */
