/*
 * worker_main.h - the worker process of an isolated plugin: `bgtaskd --worker
 * NAME HOSTPID`, started by the host (isolate.c) with one end of a socketpair
 * as its fd 3. It loads its one plugin with the host's loader (the same
 * permission and ABI checks), gives it a bgt_api table of its own that speaks
 * the protocol of ipc.h, and runs the calls the host sends one at a time.
 * It never sees the host's config or Redis: the INIT frame carries only the
 * plugin's file, its config section and the limits it must enforce.
 */
#ifndef BGT_WORKER_MAIN_H
#define BGT_WORKER_MAIN_H

/* The argument that makes bgtaskd a worker: `bgtaskd --worker NAME HOSTPID`. */
#define WORKER_ARG "--worker"

/*
 * Run as a worker until the host closes its end of the socket (exit status 0)
 * or something fails (1, with a message on stderr or in a FAILED frame).
 * Called by main() before anything else of the host starts.
 */
int worker_main(int argc, char **argv);

#endif
