/*
 * numerics.c - names of the numerics modes (numerics.h).
 */
#include "numerics.h"

#include <string.h>

const char *bt_numerics_name(bt_numerics n) {
    return n == BT_NUMERICS_LLAMACPP ? "llamacpp" : "fast";
}

bt_status bt_numerics_parse(const char *s, bt_numerics *out, bt_error *err) {
    if (strcmp(s, "fast") == 0)
        *out = BT_NUMERICS_FAST;
    else if (strcmp(s, "llamacpp") == 0)
        *out = BT_NUMERICS_LLAMACPP;
    else
        return bt_error_set(err, BT_ERR_INVALID_ARG, "--numerics '%s': not 'fast' or 'llamacpp'",
                            s);
    return BT_OK;
}
