// Copies GraphiQL's and React's browser builds from node_modules to dist/, where the server serves them.
import { copyFileSync, mkdirSync } from 'node:fs';

const files = {
  'graphiql.min.js': 'node_modules/graphiql/graphiql.min.js',
  'graphiql.min.css': 'node_modules/graphiql/graphiql.min.css',
  'react.production.min.js': 'node_modules/react/umd/react.production.min.js',
  'react-dom.production.min.js': 'node_modules/react-dom/umd/react-dom.production.min.js',
};
mkdirSync('dist', { recursive: true });
for (const [name, source] of Object.entries(files)) {
  copyFileSync(source, `dist/${name}`);
}
console.log(`graphiql: ${Object.keys(files).length} files in dist/`);
