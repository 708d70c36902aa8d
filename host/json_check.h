/*
 * json_check.h - what user JSON must be before bgtask keeps it: valid UTF-8,
 * no NUL character, nested at most JSON_MAX_DEPTH deep.
 *
 * cJSON accepts text that breaks all three: invalid UTF-8 (kept, then served
 * as invalid JSON), "\u0000" (the string silently cut there), and nesting up
 * to its own limit of 1000, which a payload that wraps the value then
 * exceeds when a reader parses it. Args (at submission) and results (at
 * bgt_set_result) are checked with these, so what is stored can always be
 * read back whole.
 */
#ifndef BGT_JSON_CHECK_H
#define BGT_JSON_CHECK_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

/* How deep arrays and objects may nest in args and results (a bare scalar is depth 0). */
#define JSON_MAX_DEPTH 64

/*
 * Check the text of one JSON value (len bytes; need not be NUL-terminated)
 * for the three rules above. Grammar is cJSON's business: this only looks
 * at bytes, escapes and brackets outside strings. Returns true, or false
 * with err saying what and at which byte ("invalid UTF-8 at byte 7",
 * "a \u0000 (NUL) character at byte 3: not allowed", "nested deeper than 64
 * at byte 65").
 */
bool json_text_ok(const char *text, size_t len, char *err, size_t errlen);

/*
 * The same rules for a parsed value: every string valid UTF-8 (a NUL cannot
 * be in a cJSON string), every key too, nesting at most JSON_MAX_DEPTH.
 * Returns true, or false with err saying what and where (a path such as
 * "$.a[3]").
 */
bool json_value_ok(const cJSON *v, char *err, size_t errlen);

#endif
