// Starts GraphiQL (served from /assets/vendor, no CDN) on the element #graphiql.
// The query to open comes from the element's data-query attribute (the example chosen on the page).
(function () {
  "use strict";
  var root = document.getElementById("graphiql");
  var fetcher = GraphiQL.createFetcher({ url: root.dataset.endpoint || "/graphql" });
  var props = { fetcher: fetcher, defaultEditorToolsVisibility: false, shouldPersistHeaders: false };
  if (root.dataset.query) {
    props.query = root.dataset.query;
    props.defaultQuery = root.dataset.query;
  }
  ReactDOM.createRoot(root).render(React.createElement(GraphiQL, props));
})();
