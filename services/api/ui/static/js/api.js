// The only way the viewer talks to the service: POST /graphql (same origin), with the token
// the user typed (kept in sessionStorage, so it dies with the tab) as a Bearer header.
const TOKEN_KEY = "circuitreg.token";
const PAGE_SIZE = 100; // the API's default max_page_size

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class GraphQLError extends Error {}

export async function gql(query, variables = {}) {
  const headers = { "Content-Type": "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch("/graphql", {
    method: "POST",
    headers,
    body: JSON.stringify({ query, variables }),
  });
  let body;
  try {
    body = await response.json();
  } catch {
    throw new GraphQLError(`HTTP ${response.status} from /graphql`);
  }
  if (body.errors && body.errors.length) {
    throw new GraphQLError(body.errors.map((e) => e.message).join("; "));
  }
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? `: ${body.detail}` : "";
    throw new GraphQLError(`HTTP ${response.status} from /graphql${detail}`);
  }
  return body.data;
}

// Follows a Relay connection to its end. `select(data)` picks the connection out of the answer;
// the query must take `$first: Int!` and `$after: String` and ask for pageInfo + nodes.
export async function allPages(query, variables, select) {
  const items = [];
  let after = null;
  for (;;) {
    const data = await gql(query, { ...variables, first: PAGE_SIZE, after });
    const connection = select(data);
    items.push(...connection.nodes);
    if (!connection.pageInfo.hasNextPage) return items;
    after = connection.pageInfo.endCursor;
  }
}
