// The Connect clients the console talks to: the same QueryService and
// CommandService as every other client, on the origin that served the page.
import { createClient, ConnectError, Code, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { QueryService } from "./gen/tally/inventory/v1/query_pb";

const tokenKey = "tally.token";

export function token(): string {
  return localStorage.getItem(tokenKey) ?? "";
}

export function setToken(t: string): void {
  if (t) {
    localStorage.setItem(tokenKey, t);
  } else {
    localStorage.removeItem(tokenKey);
  }
}

// Every call carries the token the user gave, when there is one.
const bearer: Interceptor = (next) => async (req) => {
  const t = token();
  if (t) {
    req.header.set("Authorization", "Bearer " + t);
  }
  return next(req);
};

const transport = createConnectTransport({
  baseUrl: window.location.origin,
  interceptors: [bearer],
});

export const query = createClient(QueryService, transport);

// explain turns a failed call into a sentence for the status line.
export function explain(err: unknown): string {
  const ce = ConnectError.from(err);
  switch (ce.code) {
    case Code.Unauthenticated:
      return "The server needs a token: paste one into “API token” (tally token prints one).";
    case Code.PermissionDenied:
      return "Your token may not read this: " + ce.rawMessage;
    case Code.Unavailable:
      return "The server is unavailable (" + ce.rawMessage + "); retrying.";
    default:
      return ce.rawMessage || String(err);
  }
}
