/*
 * http_ui.h - the dashboard's files, served by the HTTP server under /ui/.
 *
 * The files of one folder (http.ui_dir) are read into memory once, when the
 * server starts; a request can only pick one of them by its exact name, so no
 * part of a URL ever reaches the file system. Only http*.c use this header:
 * its answer function speaks libmicrohttpd.
 */
#ifndef BGT_HTTP_UI_H
#define BGT_HTTP_UI_H

#include <stddef.h>

/* Most files, and most bytes in all, a dashboard folder may hold. */
#define UI_MAX_FILES 256
#define UI_MAX_BYTES (16u << 20)
/* Longest file name served. */
#define UI_NAME_MAX 100

typedef struct ui_files ui_files;
struct MHD_Connection;

/*
 * Read the dashboard in dir: every regular file directly in it whose name is
 * [A-Za-z0-9][A-Za-z0-9._-]* (at most UI_NAME_MAX bytes) and ends in a known
 * extension (html, css, js, mjs, json, svg, png, ico, txt, woff2). Symbolic
 * links, folders, dotfiles and other names are skipped, so nothing outside
 * dir, and nothing not meant for a browser, can be served. dir must hold an
 * index.html. Returns 0 with *out (free with ui_files_free), or a negative
 * errno with err naming dir and what is wrong. dir is not kept.
 */
int ui_files_load(const char *dir, ui_files **out, char *err, size_t errlen);

/* How many files were read. */
size_t ui_files_count(const ui_files *u);

/* Free u (NULL is fine). No response may still be sending its files. */
void ui_files_free(ui_files *u);

/* ui_files_answer's answer when there is no such file. */
#define UI_NOT_FOUND (-1)

/*
 * Answer a GET or HEAD of /ui/<name> ("" is index.html) on c: the file with
 * its content type, a strong ETag, `Cache-Control: no-cache` (browsers
 * revalidate, and a match of If-None-Match gets 304 without a body) and
 * headers that keep the page to its own origin (Content-Security-Policy,
 * nosniff, no framing, no referrer). Returns libmicrohttpd's MHD_YES or
 * MHD_NO, or UI_NOT_FOUND (nothing queued: the caller answers 404).
 * The response points into u, which must outlive the server.
 */
int ui_files_answer(const ui_files *u, struct MHD_Connection *c, const char *name);

#endif
