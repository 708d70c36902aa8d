/*
 * api.h - the table of host services handed to every plugin's init
 * (struct bgt_api of sdk/bgtask.h), assembled from the loader's registration
 * functions and the manager's task functions.
 */
#ifndef BGT_API_H
#define BGT_API_H

#include "bgtask.h"
#include "store.h"

/* The host's table; lives as long as the process. */
const bgt_api *host_api(void);

/*
 * The store that bgt_submit uses (borrowed; calls are serialized), set before
 * any plugin's init runs, so an init can submit. NULL: bgt_submit returns
 * -EIO and logs why_not (copied), e.g. "bgtaskd --check-config submits
 * nothing".
 */
void host_api_set_submit_store(store *st, const char *why_not);

#endif
