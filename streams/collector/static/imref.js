/*! imref.js: keeps impact's click id (?im_ref=) across pages and the retailer's own domains,
 * and tells the imref-stream click collector which customer it belongs to.
 * No dependencies, no build step; served by the collector at {base_path}/imref.js or hosted anywhere.
 *
 *   <script src="/imref/imref.js"></script>         <!-- the collector under the shop's own host -->
 *   <script>
 *     imref.init({customerId: "V-8841",            // pseudonymous id, never an e-mail or phone
 *                 domains: ["shop.example", "shop.co.uk"],
 *                 cookieDays: 30,                    // collector defaults to the script's origin
 *                 requireConsent: true});            // nothing stored or sent before consent
 *     // a consent banner of your own: imref.consent(true) / imref.consent(false)
 *     // IAB TCF v2 (__tcfapi, purpose 1) and Google Consent Mode (ad_storage) are read by themselves
 *   </script>
 */
(function (root, factory) {
  var api = factory(root);
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.imref = api;
})(typeof self !== "undefined" ? self : this, function (root) {
  "use strict";

  // impact click ids: 1-64 URL-safe characters (RFC 3986 unreserved; schemas/click.schema.json).
  var CLICK_ID = /^[A-Za-z0-9._~-]{1,64}$/;
  var ACTIVATE = ["click", "auxclick", "contextmenu", "keydown"];
  var doc = root.document;
  var script = doc && doc.currentScript && doc.currentScript.src;
  // consent: "granted", "denied" or "pending" (only with requireConsent, until a signal says).
  var state = { ref: null, landed: null, customerId: null, options: null, consent: "pending", watching: false,
                sent: false };

  function readCookie(name) {
    var parts = doc.cookie ? doc.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === name) {
        try { return decodeURIComponent(parts[i].slice(eq + 1)); } catch (e) { return null; }
      }
    }
    return null;
  }

  // The collector's answer sets the same cookies from the server (Safari keeps those for their
  // whole Max-Age, script-written ones for days): written here first, for a landing whose beacon
  // is not sent (no customer yet) or not answered.
  function writeCookie(name, value, o) {
    var cookie = name + "=" + encodeURIComponent(value) + "; Path=/; Max-Age=" +
      Math.round(o.cookieDays * 86400) + "; SameSite=Lax";
    if (o.cookieDomain) cookie += "; Domain=" + o.cookieDomain;
    if (root.location.protocol === "https:") cookie += "; Secure";
    doc.cookie = cookie;
  }

  // The host's own cookie and one for each domain above it, whoever set it (this script with its
  // cookieDomain, or the collector with its cookie_domains); browsers ignore a public suffix's.
  function removeCookie(name) {
    var gone = name + "=; Path=/; Max-Age=0; SameSite=Lax", labels = root.location.hostname.split(".");
    doc.cookie = gone;
    for (var i = 0; i < labels.length - 1; i++) doc.cookie = gone + "; Domain=" + labels.slice(i).join(".");
  }

  function hostIsOneOf(host, domains) {
    host = host.toLowerCase();
    for (var i = 0; i < domains.length; i++) {
      var d = String(domains[i]).toLowerCase().replace(/^\./, "");
      if (host === d || host.slice(-(d.length + 1)) === "." + d) return true;
    }
    return false;
  }

  function otherDomainLink(link) {
    var o = state.options;
    if (!o || !link || !link.getAttribute || !link.getAttribute("href")) return null;
    var url;
    try { url = new URL(link.href, root.location.href); } catch (e) { return null; }
    if ((url.protocol !== "http:" && url.protocol !== "https:") || url.host === root.location.host) return null;
    return hostIsOneOf(url.hostname, o.domains) ? url : null;
  }

  // A cookie is per domain: a link to another of the retailer's domains takes the click id
  // along in its URL, where the snippet on that domain picks it up as if it were a landing.
  function decorate(link) {
    var url = state.ref && otherDomainLink(link), param = state.options && state.options.param;
    if (!url || url.searchParams.get(param) === state.ref) return;
    url.searchParams.set(param, state.ref);
    link.href = url.toString();
  }

  function undecorate(ref) {
    var links = doc.querySelectorAll("a[href]"), param = state.options.param;
    for (var i = 0; i < links.length; i++) {
      var url = otherDomainLink(links[i]);
      if (url && url.searchParams.get(param) === ref) {
        url.searchParams["delete"](param);
        links[i].href = url.toString();
      }
    }
  }

  function decorateAll() {
    var links = doc.querySelectorAll("a[href]");
    for (var i = 0; i < links.length; i++) decorate(links[i]);
  }

  // Links added after init are decorated when they are used (capture phase: before navigation).
  function onActivate(event) {
    var target = event.target;
    decorate(target && target.closest ? target.closest("a[href]") : null);
  }

  function hash(text) {
    var h = 5381;
    for (var i = 0; i < text.length; i++) h = ((h * 33) ^ text.charCodeAt(i)) >>> 0;
    return h.toString(36);
  }

  function send(payload) {
    var o = state.options, body = JSON.stringify(payload);
    // text/plain is a CORS-safelisted type: no preflight, and sendBeacon survives page unload.
    // Both go with credentials, so that the answer's Set-Cookie is stored.
    try {
      if (root.navigator && root.navigator.sendBeacon && root.navigator.sendBeacon(o.collector, body)) return true;
    } catch (e) { /* fall through to fetch */ }
    if (typeof root.fetch !== "function") return false;
    root.fetch(o.collector, { method: "POST", body: body, keepalive: true, mode: "cors", credentials: "include",
                              headers: { "Content-Type": "text/plain" } })["catch"](function () {});
    return true;
  }

  // One beacon per (click id, customer): later page views and reloads do not repeat it.
  function report(customerId) {
    var o = state.options;
    if (!o || !state.ref || !customerId || !o.collector || (o.requireConsent && state.consent !== "granted")) return false;
    var marker = hash(state.ref + "\n" + customerId);
    if (readCookie(o.cookieName + "_sent") === marker) return false;
    var loc = root.location, payload = {
      im_ref: state.ref,
      customer_id: String(customerId),
      // No query string: it may carry personal data (newsletter links often do).
      landing_url: (loc.origin + loc.pathname).slice(0, 2048),
      domain: loc.hostname
    };
    if (o.requireConsent) payload.consent = true;
    var sent = send(payload);
    if (sent) writeCookie(o.cookieName + "_sent", marker, o);
    return sent;
  }

  // Consent given (or not needed): keep the click id, carry it along, report it.
  function start() {
    var o = state.options;
    var kept = readCookie(o.cookieName);
    if (state.landed !== null) {
      state.ref = state.landed;
      // Rewriting the same value from script would turn a server-set cookie into a script-written one.
      if (kept !== state.landed) writeCookie(o.cookieName, state.landed, o);
    } else {
      state.ref = kept !== null && CLICK_ID.test(kept) ? kept : null;
    }
    if (state.ref && o.domains.length) {
      if (doc.readyState === "loading") doc.addEventListener("DOMContentLoaded", decorateAll);
      else decorateAll();
      ACTIVATE.forEach(function (type) { doc.addEventListener(type, onActivate, true); });
    }
    state.sent = report(state.customerId);
    return state.sent;
  }

  // Consent refused or withdrawn: nothing kept, nothing carried along.
  function stop() {
    var o = state.options, ref = state.ref;
    state.ref = null;
    doc.removeEventListener("DOMContentLoaded", decorateAll);
    ACTIVATE.forEach(function (type) { doc.removeEventListener(type, onActivate, true); });
    if (ref) undecorate(ref);
    removeCookie(o.cookieName);
    removeCookie(o.cookieName + "_sent");
  }

  // The latest word wins, whichever signal it came from; one given before init is kept for it.
  function decide(granted) {
    var now = granted ? "granted" : "denied";
    if (now === state.consent) return false;
    state.consent = now;
    if (!state.options || !state.options.requireConsent) return false;
    if (granted) return start();
    stop();
    return false;
  }

  // IAB TCF v2: purpose 1 is "store and/or access information on a device". A CMP that says the
  // GDPR does not apply needs no consent; one still showing its UI has not decided yet.
  function watchTcf() {
    root.__tcfapi("addEventListener", 2, function (tc, ok) {
      if (!ok || !tc) return;
      if (tc.gdprApplies === false) return decide(true);
      if (tc.eventStatus !== "tcloaded" && tc.eventStatus !== "useractioncomplete") return;
      decide(!!(tc.purpose && tc.purpose.consents && tc.purpose.consents[1]));
    });
  }

  // Google Consent Mode: gtag("consent", "default" | "update", {ad_storage: ...}) pushes its
  // arguments onto the dataLayer; read what is there and what comes later. A region-scoped default
  // says nothing about this visitor's region, so it decides nothing here.
  function consentCommand(entry) {
    if (!entry || entry[0] !== "consent" || (entry[1] !== "default" && entry[1] !== "update")) return;
    var params = entry[2];
    if (!params || (params.ad_storage !== "granted" && params.ad_storage !== "denied")) return;
    if (entry[1] === "default" && params.region) return;
    decide(params.ad_storage === "granted");
  }

  function watchConsentMode(name) {
    var layer = root[name] = root[name] || [];
    for (var i = 0; i < layer.length; i++) consentCommand(layer[i]);
    var push = layer.push;
    layer.push = function () {
      var result = push.apply(layer, arguments);
      for (var j = 0; j < arguments.length; j++) consentCommand(arguments[j]);
      return result;
    };
  }

  function watchSignals() {
    var o = state.options;
    if (state.watching) return;
    state.watching = true;
    if (o.consentMode) watchConsentMode(o.dataLayer);
    if (!o.tcf) return;
    // A CMP's stub normally comes first; one loaded after the snippet is found once the page has.
    if (typeof root.__tcfapi === "function") watchTcf();
    else root.addEventListener("load", function () { if (typeof root.__tcfapi === "function") watchTcf(); });
  }

  function init(options) {
    options = options || {};
    var o = state.options = {
      collector: options.collector || (script ? new URL("collect", script).toString() : null),
      domains: options.domains || [],
      cookieDays: options.cookieDays > 0 ? options.cookieDays : 30,
      cookieName: options.cookieName || "im_ref",
      cookieDomain: options.cookieDomain || null,
      param: options.param || "im_ref",
      requireConsent: options.requireConsent === true,
      tcf: options.tcf !== false,
      consentMode: options.consentMode !== false,
      dataLayer: options.dataLayer || "dataLayer"
    };
    state.customerId = options.customerId || null;
    state.sent = false;
    var landed = null;
    try { landed = new URL(root.location.href).searchParams.get(o.param); } catch (e) { /* keep null */ }
    state.landed = landed !== null && CLICK_ID.test(landed) ? landed : null;
    if (!o.requireConsent) {
      start();
    } else {
      state.ref = null;
      if (state.consent === "granted") start();
      else if (state.consent === "denied") stop();
      watchSignals();  // may decide at once, from a signal given before the snippet ran
    }
    return { ref: state.ref, sent: state.sent, consent: o.requireConsent ? state.consent : "not required" };
  }

  return {
    init: init,
    // The visitor became known later (e.g. signed in): report the click for this customer.
    identify: function (customerId) {
      state.customerId = customerId;
      return report(customerId);
    },
    // The page's own consent banner: true once the visitor agreed, false when they refuse or withdraw.
    consent: function (granted) { return decide(granted === true); },
    // The click id in effect (null without consent), for checkout to put on order items as im_ref.
    ref: function () { return state.ref; }
  };
});
