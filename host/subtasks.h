/*
 * subtasks.h - the subtasks a submitter gives a parallel task. However they
 * are given (bgtaskctl submit --subtasks-file, "subtasks" in POST /v1/tasks,
 * or args.subtasks itself), they travel as the task's args.subtasks, and the
 * host that first claims the task makes them its subtasks one way: the
 * handler's split function is not called, its batch_size groups them, and
 * tasks.max_subtasks bounds them. Nothing else of the args is read then (each
 * subtask runs with its own args only), so args that hold anything beside
 * "subtasks" are refused, never dropped: at submission, and again at the
 * claim for what a client wrote without these checks.
 */
#ifndef BGT_SUBTASKS_H
#define BGT_SUBTASKS_H

#include <stddef.h>

#include <cjson/cJSON.h>

/* The key of a task's args that holds the subtasks its submitter gives it. */
#define SUBTASKS_KEY "subtasks"

/*
 * The args to submit: args (a JSON object's text, NULL for {}) and subtasks
 * (a JSON array's text of per-subtask args, NULL for none), both checked
 * valid JSON of that type by the caller. With subtasks, *out is
 * {"subtasks": <subtasks>} (their text as given); without, args itself. Then
 * the args must hold no other key beside an args.subtasks, which must be an
 * array of at most max_subtasks elements (0: not counted). Returns 0 with
 * *out malloc'd, or -EINVAL with err saying what would be ignored or is
 * wrong, naming it as args/args.<key>/subtasks.
 */
int subtasks_submit_args(const char *args, const char *subtasks, int max_subtasks, char **out,
                         char *err, size_t errlen);

/*
 * At a parallel task's first claim: the subtasks its args give. 1 with *list
 * (an array, borrowed from args) when args holds "subtasks"; 0 when it does
 * not (its split function makes them); -EINVAL with *why (malloc'd) when
 * args.subtasks is not an array or args holds other keys beside it.
 */
int subtasks_in_args(const cJSON *args, const cJSON **list, char **why);

#endif
