// Counter demo page: Execute sends the chosen command; the live counter polls STATUS every second.
(function () {
  'use strict';

  var POLL_MS = 1000;
  var $ = function (id) { return document.getElementById(id); };

  // control calls /track/control/<cmd> and resolves to the reply, or rejects with a readable error.
  function control(cmd, method) {
    return fetch('track/control/' + encodeURIComponent(cmd), {
      method: method,
      headers: { 'Accept': 'application/json' },
      cache: 'no-store'
    }).then(function (res) {
      return res.json().catch(function () { return null; }).then(function (body) {
        if (!res.ok || !body) {
          var msg = body && body.ResultString && body.ResultString.error;
          throw new Error(msg || ('HTTP ' + res.status + ' ' + res.statusText));
        }
        return body;
      });
    });
  }

  function showResult(text, isError) {
    var out = $('stations-view-json');
    out.textContent = text;
    out.className = isError ? 'error' : '';
  }

  function showCounter(st) {
    $('counter-value').textContent = st.value;
    var badge = $('counter-state');
    badge.textContent = st.status;
    badge.className = 'badge' + (st.status === 'ON' ? ' on' : '');
    $('counter-updated').textContent = 'Last update ' + new Date().toLocaleTimeString() + '.';
    $('counter-updated').className = '';
  }

  function showCounterError(err) {
    var badge = $('counter-state');
    badge.textContent = 'unreachable';
    badge.className = 'badge error';
    $('counter-updated').textContent = err.message;
    $('counter-updated').className = 'error';
  }

  function execute(ev) {
    ev.preventDefault();
    var cmd = $('track').value;
    var button = $('track-play-button');
    button.disabled = true;
    control(cmd, 'POST').then(function (body) {
      if (body.Result === 1) {
        showResult('Turn On counter');
      } else if (body.Result === 2) {
        showResult('Turn Off counter');
      } else {
        showResult(JSON.stringify(body));
        if (body.Result === 3) { showCounter(body.ResultString); }
      }
      poll();
    }).catch(function (err) {
      showResult('Error: ' + err.message, true);
    }).then(function () {
      button.disabled = false;
    });
  }

  // poll refreshes the counter now and schedules the next refresh; one request at a time, none while the
  // tab is hidden.
  var timer = null;
  var inFlight = false;
  function poll() {
    clearTimeout(timer);
    timer = null;
    if (document.hidden || inFlight) { return; }
    inFlight = true;
    control('STATUS', 'GET').then(function (body) {
      showCounter(body.ResultString);
    }).catch(showCounterError).then(function () {
      inFlight = false;
      if (!document.hidden) { timer = setTimeout(poll, POLL_MS); }
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('control-form').addEventListener('submit', execute);
    document.addEventListener('visibilitychange', poll);
    poll();
  });
}());
