import { describeAccessMatrix, type AccessRow } from '../helpers/access-matrix.js';

// The caller's own usage needs `usage:read`; sessions carry it, so every signed-in user gets their own.
const ownUsage = { guest: 401, other: 200, owner: 200, admin: 200, keyWithScope: 200, keyWithoutScope: 403 };
const adminsOnly = { guest: 401, other: 403, owner: 403, admin: 200, keyWithScope: 200, keyWithoutScope: 403 };

const rows: AccessRow[] = [
  { method: 'GET', path: '/usage', scope: 'usage:read', expect: ownUsage },
  { method: 'GET', path: '/usage?group_by=model', scope: 'usage:read', expect: ownUsage },
  { method: 'GET', path: '/usage/logs', scope: 'usage:read', expect: ownUsage },
  { method: 'GET', path: '/admin/usage', scope: 'admin', expect: adminsOnly },
  { name: 'GET /admin/usage by user', method: 'GET', path: '/admin/usage?group_by=user', scope: 'admin', expect: adminsOnly },
  // An administrator's key without the admin scope is not an administrator.
  { name: 'GET /admin/usage with an admin\'s key holding only usage:read', method: 'GET', path: '/admin/usage', scope: 'usage:read', keyOwner: 'admin', expect: { guest: 401, other: 403, owner: 403, admin: 200, keyWithScope: 403 } },
];

describeAccessMatrix('usage access', rows);
