/*! imref.js: keeps impact's click id (?im_ref=) across pages and the retailer's own domains,
 * and tells the imref-stream click collector which customer it belongs to.
 * No dependencies, no build step; served by the worker at /imref.js or hosted anywhere.
 *
 *   <script src="https://collect.shop.example/imref.js"></script>
 *   <script>
 *     imref.init({customerId: "V-8841",            // pseudonymous id, never an e-mail or phone
 *                 domains: ["shop.example", "shop.co.uk"],
 *                 cookieDays: 30});                  // collector defaults to the script's origin
 *   </script>
 */
(function (root, factory) {
  var api = factory(root);
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.imref = api;
})(typeof self !== "undefined" ? self : this, function (root) {
  "use strict";

  // impact click ids: 1-64 printable ASCII characters (schemas/click.schema.json).
  var CLICK_ID = /^[\x21-\x7e]{1,64}$/;
  var doc = root.document;
  var script = doc && doc.currentScript && doc.currentScript.src;
  var state = { ref: null, options: null };

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

  function writeCookie(name, value, o) {
    var cookie = name + "=" + encodeURIComponent(value) + "; Path=/; Max-Age=" +
      Math.round(o.cookieDays * 86400) + "; SameSite=Lax";
    if (o.cookieDomain) cookie += "; Domain=" + o.cookieDomain;
    if (root.location.protocol === "https:") cookie += "; Secure";
    doc.cookie = cookie;
  }

  function hostIsOneOf(host, domains) {
    host = host.toLowerCase();
    for (var i = 0; i < domains.length; i++) {
      var d = String(domains[i]).toLowerCase().replace(/^\./, "");
      if (host === d || host.slice(-(d.length + 1)) === "." + d) return true;
    }
    return false;
  }

  // A cookie is per domain: a link to another of the retailer's domains takes the click id
  // along in its URL, where the snippet on that domain picks it up as if it were a landing.
  function decorate(link) {
    var o = state.options;
    if (!o || !state.ref || !link || !link.getAttribute || !link.getAttribute("href")) return;
    var url;
    try { url = new URL(link.href, root.location.href); } catch (e) { return; }
    if ((url.protocol !== "http:" && url.protocol !== "https:") || url.host === root.location.host) return;
    if (!hostIsOneOf(url.hostname, o.domains)) return;
    if (url.searchParams.get(o.param) === state.ref) return;
    url.searchParams.set(o.param, state.ref);
    link.href = url.toString();
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
    try {
      if (root.navigator && root.navigator.sendBeacon && root.navigator.sendBeacon(o.collector, body)) return true;
    } catch (e) { /* fall through to fetch */ }
    if (typeof root.fetch !== "function") return false;
    root.fetch(o.collector, { method: "POST", body: body, keepalive: true, mode: "cors", credentials: "omit",
                              headers: { "Content-Type": "text/plain" } })["catch"](function () {});
    return true;
  }

  // One beacon per (click id, customer): later page views and reloads do not repeat it.
  function report(customerId) {
    var o = state.options;
    if (!o || !state.ref || !customerId || !o.collector) return false;
    var marker = hash(state.ref + "\n" + customerId);
    if (readCookie(o.cookieName + "_sent") === marker) return false;
    var loc = root.location;
    var sent = send({
      im_ref: state.ref,
      customer_id: String(customerId),
      // No query string: it may carry personal data (newsletter links often do).
      landing_url: (loc.origin + loc.pathname).slice(0, 2048),
      domain: loc.hostname
    });
    if (sent) writeCookie(o.cookieName + "_sent", marker, o);
    return sent;
  }

  function init(options) {
    options = options || {};
    var o = state.options = {
      collector: options.collector || (script ? new URL("collect", script).toString() : null),
      customerId: options.customerId || null,
      domains: options.domains || [],
      cookieDays: options.cookieDays > 0 ? options.cookieDays : 30,
      cookieName: options.cookieName || "im_ref",
      cookieDomain: options.cookieDomain || null,
      param: options.param || "im_ref"
    };
    var landed = null;
    try { landed = new URL(root.location.href).searchParams.get(o.param); } catch (e) { /* keep null */ }
    if (landed !== null && CLICK_ID.test(landed)) {
      state.ref = landed;
      writeCookie(o.cookieName, landed, o);
    } else {
      var kept = readCookie(o.cookieName);
      state.ref = kept !== null && CLICK_ID.test(kept) ? kept : null;
    }
    if (state.ref && o.domains.length) {
      if (doc.readyState === "loading") doc.addEventListener("DOMContentLoaded", decorateAll);
      else decorateAll();
      ["click", "auxclick", "contextmenu", "keydown"].forEach(function (type) {
        doc.addEventListener(type, onActivate, true);
      });
    }
    return { ref: state.ref, sent: report(o.customerId) };
  }

  return {
    init: init,
    // The visitor became known later (e.g. signed in): report the click for this customer.
    identify: function (customerId) { return report(customerId); },
    // The click id in effect, for checkout to put on order items as im_ref.
    ref: function () { return state.ref; }
  };
});
