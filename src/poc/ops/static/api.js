// What the studio page and the station list both do with the service's JSON API.

const ANSWER_TIMEOUT_MS = 5000;  // a service that accepts but never answers is as gone as a closed port

// The page this browser is on, for the login form to come back to ("/" is where it goes anyway).
function logInAgain() {
  const here = location.pathname + location.search;
  location.assign(here === "/" ? "/login" : `/login?next=${encodeURIComponent(here)}`);
}

// GET `url`'s JSON answer; throws an Error whose message says why there is none. A 401 means
// STUDIO_TOKEN changed (this cookie opens nothing any more): off to the login form.
async function getJson(url) {
  let response;
  try {
    const timeout = AbortSignal.timeout ? { signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS) } : {};  // Safari < 16
    response = await fetch(url, timeout);
  } catch (err) {
    throw new Error(`the service did not answer (${err.message})`);
  }
  if (response.status === 401) {
    logInAgain();
    throw new Error("logged out");
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
  return answer;
}
