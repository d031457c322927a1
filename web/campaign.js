// Which campaign a page belongs to: "" at /play and /watch, "/c/ID" at /c/ID/play and /c/ID/watch
// (a host runs many campaigns behind one port, docs/hosting.md). Its config is at PREFIX/web/config.json.

/** @param {string} [pathname] */
export function campaignPrefix(pathname = location.pathname) {
  const m = pathname.match(/^(\/c\/[A-Za-z0-9][A-Za-z0-9_.-]*)\//);
  return m ? m[1] : "";
}
