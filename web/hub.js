// The hub's part of the login panel, behind one function: log in, then ask the hub for a place in
// the campaign. The shape is the hub's documented JSON API (stream #11, docs/hub.md):
//   POST {hub}/v1/auth/login                 {"login", "password"} -> {"access_token", ...}
//   (login: the account's email or handle; errors are {"error": code, "message": reason})
//   POST {hub}/v1/campaigns/{id}/join        Authorization: Bearer    -> {"url", "token"}

/**
 * A join (game server URL and a single-use join token) for `campaign`, through the hub.
 * Call it again for every (re)connection: join tokens are single-use.
 * @param {string} hub  the hub's base URL
 * @param {string} campaign
 * @param {{username: string, password: string}} login
 * @returns {Promise<{url: string, token: string}>}
 */
export async function hubJoin(hub, campaign, login) {
  const base = hub.replace(/\/+$/, "");
  const post = async (/** @type {string} */ path, /** @type {any} */ body, /** @type {string} */ bearer = "") => {
    /** @type {Record<string, string>} */
    const headers = { "Content-Type": "application/json" };
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    const r = await fetch(base + path, { method: "POST", headers, body: JSON.stringify(body) });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.message || data.error || `hub: ${path} answered ${r.status}`);
    return data;
  };
  const session = await post("/v1/auth/login", { login: login.username, password: login.password });
  const access = session.access_token || session.token;
  if (typeof access !== "string") throw new Error("hub: the login answer has no access token");
  const join = await post(`/v1/campaigns/${encodeURIComponent(campaign)}/join`, {}, access);
  if (typeof join.url !== "string" || typeof join.token !== "string") throw new Error("hub: the join answer has no url and token");
  return { url: join.url, token: join.token };
}
